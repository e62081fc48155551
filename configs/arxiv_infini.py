# Infini-attention on Arxiv-math: pg19_infini.py's model and training (arXiv:2404.07143, section 4.1: the paper
# trains and evaluates the same 12-layer, segment-2048, 32768-token setup on Arxiv-math as on PG19) on the arXiv
# subset of proof-pile. Data: `python data/arxiv_math/prepare.py` writes data/arxiv_math (GPT-2 tokenizer).
# AdamW rather than the paper's Adafactor: see pg19_infini.py. 5000 steps of 2.1M tokens: our budget, not the
# paper's (raise max_iters and lr_decay_iters together for a longer run).
# Cost (estimated from FLOPs at ~35% MFU, not measured): ~1 s/step on 8 H100s (~1.5 h), ~8 s/step on one.
#   torchrun --standalone --nproc_per_node=8 train.py configs/arxiv_infini.py
out_dir = 'out-arxiv-infini'
dataset = 'tokens'         # the files in data_dir (train.py's default is generated passkeys)
data_dir = 'data/arxiv_math'
eval_interval = 250
eval_iters = 16
ckpt_interval = 250
always_save_checkpoint = True

# 64 windows of 32768 tokens per step (~2.1M tokens): 1 window per micro-step, 64 micro-steps over all GPUs
batch_size = 1
seq_len = 32768
gradient_accumulation_steps = 64

n_layer = 12
n_head = 8
n_embd = 1024
dropout = 0.0
attn = 'infini'
segment_len = 2048
mem_update = 'linear'
gate_init = (0.0,)         # every head starts as an even mix of memory and local attention

learning_rate = 6e-4
max_iters = 5000           # ~10B tokens; our choice of budget, not the paper's
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
gate_lr = 0.01             # the gates β: their own learning rate, no weight decay (see model.configure_optimizers)
decay_lr = True
warmup_iters = 1000        # as the paper
lr_decay_iters = 5000
min_lr = 6e-5

dtype = 'auto'             # bf16 autocast on the GPU
compile = True
