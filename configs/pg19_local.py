# Local-attention baseline on PG19: the model of pg19_infini.py (12 layers, 8 x 128 heads, segment 2048, windows
# of 32768 tokens) without the compressive memory: each 2048-token segment attends only to itself, so this is the
# "no memory" reference that Infini-attention's gain is measured against (arXiv:2404.07143). AdamW and the schedule
# as pg19_infini.py (read its comments for why AdamW rather than the paper's Adafactor).
# Cost (estimated, not measured): slightly less than pg19_infini.py: ~1 s/step on 8 H100s, ~8 s/step on one.
#   torchrun --standalone --nproc_per_node=8 train.py configs/pg19_local.py
out_dir = 'out-pg19-local'
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
attn = 'local'
segment_len = 2048

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
