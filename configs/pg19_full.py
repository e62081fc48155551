# Full-attention baseline on PG19: the model of pg19_infini.py with ordinary causal attention over the whole
# window. Full attention costs grow with seq_len²: at 32768 tokens its attention alone would be ~2x the FLOPs of the
# rest of the model, so this trains at 8192 tokens, the longest length whose cost per token stays near the
# others' (and 4x pg19_infini.py's segment). Tokens per step are kept at ~2.1M (256 windows of 8192).
# With SDPA's flash/cuDNN kernels memory grows only linearly, so --seq_len=16384 or 32768 with batch_size=1
# should fit on 80 GB too (not measured). AdamW and the schedule as pg19_infini.py (see its comments).
# Cost (estimated from FLOPs at ~35% MFU, not measured): ~1.3 s/step on 8 H100s, ~10 s/step on one.
#   torchrun --standalone --nproc_per_node=8 train.py configs/pg19_full.py
out_dir = 'out-pg19-full'
dataset = 'tokens'         # the files in data_dir (train.py's default is generated passkeys)
data_dir = 'data/pg19'
eval_interval = 250
eval_iters = 16
ckpt_interval = 250
always_save_checkpoint = True

# 256 windows of 8192 tokens per step (~2.1M tokens, as the others): 4 per micro-step, 64 micro-steps
batch_size = 4
seq_len = 8192
gradient_accumulation_steps = 64

n_layer = 12
n_head = 8
n_embd = 1024
dropout = 0.0
attn = 'full'

learning_rate = 6e-4
max_iters = 10000          # ~21B tokens, several epochs of PG19; our choice of budget, not the paper's
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
decay_lr = True
warmup_iters = 1000        # as the paper
lr_decay_iters = 10000
min_lr = 6e-5

dtype = 'auto'             # bf16 autocast on the GPU
compile = True
