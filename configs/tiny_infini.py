# Tiny Infini-attention model on the synthetic corpus: the same as tiny_synthetic.py (the earlier quick start), under
# its own out_dir, to compare with tiny_local.py, tiny_dilated.py and tiny_gca.py at equal size and budget (4 layers,
# n_embd 128).
# Infini-attention: Munkhdalai et al. 2024, arXiv:2404.07143 (local attention in 128-token segments + memory).
# Time: about 1.5 minutes on 2 idle CPU cores (more when other jobs share them).
out_dir = 'out-tiny-infini'
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
attn = 'infini'
segment_len = 128
mem_update = 'linear'
gate_init = (0.0,)         # every head starts as an even mix of memory and local attention

learning_rate = 2e-3       # tiny models take large steps
max_iters = 300
weight_decay = 0.1
grad_clip = 1.0
gate_lr = 0.01
warmup_iters = 30
lr_decay_iters = 0         # 0: decay over max_iters
min_lr = 2e-4

device = 'auto'
compile = False            # compiling takes longer than this whole run on a CPU
