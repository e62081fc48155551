# Tiny LongNet dilated-attention model on the synthetic corpus (Ding et al. 2023, arXiv:2307.02486, section 2.2),
# LongNet's geometric pattern scaled down to a 512-token window: segment lengths w = 128, 256, 512 with
# dilation rates r = 1, 2, 4. Same size and budget as tiny_infini.py (4 layers, n_embd 128).
# Time: about 2 minutes on 2 idle CPU cores (more when other jobs share them).
out_dir = 'out-tiny-dilated'
dataset = 'tokens'         # the files in data_dir (train.py's default is generated passkeys)
data_dir = 'data/synthetic'
eval_interval = 50
eval_iters = 8
always_save_checkpoint = True

batch_size = 8
seq_len = 512
gradient_accumulation_steps = 1

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
attn = 'dilated'
dilated_segments = (128, 256, 512)
dilated_rates = (1, 2, 4)

learning_rate = 2e-3       # tiny models take large steps
max_iters = 300
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 30
lr_decay_iters = 0         # 0: decay over max_iters
min_lr = 2e-4

device = 'auto'
compile = False            # compiling takes longer than this whole run on a CPU
