# Tiny local-attention baseline on real books: tiny_pg19_infini.py without the memory (each 128-token segment sees
# only itself), at equal size, data and steps. The "no memory" baseline of arXiv:2404.07143 at CPU scale.
# Data: python data/pg19/prepare.py --input path/to/pg19-mini --out data/pg19_byte --tokenizer byte
# Time: 600 steps, 5.1 CPU-minutes: about 5-6 minutes on 2 idle cores, 11 when other jobs load them (docs/cpu.md).
out_dir = 'out-tiny-pg19-local'
dataset = 'tokens'         # the files in data_dir (train.py's default is generated passkeys)
data_dir = 'data/pg19_byte'
eval_interval = 100
eval_iters = 8
always_save_checkpoint = True

batch_size = 4
seq_len = 1024             # 8 segments of 128
gradient_accumulation_steps = 1

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
attn = 'local'
segment_len = 128

learning_rate = 2e-3       # tiny models take large steps
max_iters = 600
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 30
lr_decay_iters = 0         # 0: decay over max_iters
min_lr = 2e-4

device = 'auto'
compile = False            # compiling takes longer than this whole run on a CPU
