# Infini-attention with the delta rule on PG19: pg19_infini.py (the small setup of Munkhdalai et al. 2024,
# arXiv:2404.07143, section 4.1) with the memory update of eq. 5,
#   M_s = M_{s-1} + σ(K)ᵀ (V - σ(K) M_{s-1} / σ(K) z_{s-1}),
# Table 2's "Linear + Delta" row. Everything else, the AdamW choice included, as pg19_infini.py (read its comments).
# Cost: as pg19_infini.py plus a scan over the 16 segments for the memory (a few % slower; estimated, not measured):
# ~1 s/step on 8 H100s, ~8 s/step on one; an 80 GB GPU at batch_size 1.
#   torchrun --standalone --nproc_per_node=8 train.py configs/pg19_infini_delta.py
out_dir = 'out-pg19-infini-delta'
dataset = 'tokens'         # the files in data_dir (train.py's default is generated passkeys)
data_dir = 'data/pg19'
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
mem_update = 'delta'
gate_init = (0.0,)         # every head starts as an even mix of memory and local attention

learning_rate = 6e-4
max_iters = 10000          # ~21B tokens, several epochs of PG19; our choice of budget, not the paper's
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
gate_lr = 0.01             # the gates β: their own learning rate, no weight decay (see model.configure_optimizers)
decay_lr = True
warmup_iters = 1000        # as the paper
lr_decay_iters = 10000
min_lr = 6e-5

dtype = 'auto'             # bf16 autocast on the GPU
compile = True
