# Infini-attention on PG19: the small language-model setup of Munkhdalai et al. 2024, "Leave No Context Behind:
# Efficient Infinite Context Transformers with Infini-attention" (arXiv:2404.07143), section 4.1 and Table 2:
#   12 layers, 8 heads x 128 (n_embd 1024), FFN 4096 (the model uses 4 * n_embd), segment length 2048,
#   training windows of 32768 tokens = 16 segments with full backprop through all 16, linear memory (eq. 4).
# Data: `python data/pg19/prepare.py` writes data/pg19 (GPT-2 tokenizer).
#
# Optimizer: the paper used Adafactor with lr 0.01, 1000 warmup steps then cosine decay, batch 64. We use AdamW
# (it is in torch: no extra dependency) with lr 6e-4. Adafactor's 0.01 is a *relative* step, scaled by each
# weight's RMS; AdamW's steps are absolute, and 0.01 diverges at this width. 6e-4 is the usual AdamW rate for a
# GPT of this size (GPT-3 used 6e-4 at 125M and 3e-4 at 350M parameters; this model has ~200M); lower it to
# 3e-4 if the loss spikes. The warmup, the cosine decay and the batch of 64 windows are the paper's.
#
# Cost (estimated from model.flops_per_token at ~35% MFU, not measured): ~1.4 GFLOP per token, ~2.9e15 FLOP
# per step of 2.1M tokens: ~1 s/step on 8 H100s (~3 h for 10k steps), ~8 s/step on one. Memory at batch_size 1
# and 32768 tokens in bf16: roughly 50-60 GB (activations of all 16 segments plus fp32 logits), so an 80 GB GPU.
#   torchrun --standalone --nproc_per_node=8 train.py configs/pg19_infini.py
out_dir = 'out-pg19-infini'
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
mem_update = 'linear'
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
