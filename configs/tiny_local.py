# Tiny local-attention baseline on the synthetic corpus: tiny_infini.py without the memory, so the segments do not
# see each other (the "no memory" baseline of arXiv:2404.07143 at toy scale). 4 layers, n_embd 128.
# Time: about 1.2 minutes on 2 idle CPU cores (more when other jobs share them).
out_dir = 'out-tiny-local'
dataset = 'tokens'         # the files in data_dir (train.py's default is generated passkeys)
data_dir = 'data/synthetic'
eval_interval = 50
eval_iters = 8
always_save_checkpoint = True

batch_size = 8
seq_len = 512              # 4 segments of 128
gradient_accumulation_steps = 1

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
attn = 'local'
segment_len = 128

learning_rate = 2e-3       # tiny models take large steps
max_iters = 300
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 30
lr_decay_iters = 0         # 0: decay over max_iters
min_lr = 2e-4

device = 'auto'
compile = False            # compiling takes longer than this whole run on a CPU
