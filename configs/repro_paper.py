# The paper scale of scripts/reproduce.py (`--scale paper`): the model of Munkhdalai et al. 2024 (arXiv:2404.07143,
# section 4.1): 12 layers, 8 heads x 128 (n_embd 1024, FFN 4096), with the optimizer of configs/pg19_infini.py
# (AdamW at 6e-4, cosine decay; read that file for why not Adafactor). The driver adds per run attn, segment_len
# 2048, seq_len (32768 in exp1, 8192 in exp3), the batch split, max_iters, the warmup and the rest
# (`python scripts/reproduce.py --scale paper --list` prints each command). Meant for the real PG19 and proof-pile
# (data/pg19, data/arxiv_math); the budget (up to ~21B tokens per run) is ours, not the paper's, and far beyond one GPU.
dataset = 'tokens'         # the files in data_dir (train.py's default is generated passkeys)
n_layer = 12
n_head = 8
n_embd = 1024
dropout = 0.0
bias = False

learning_rate = 6e-4
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
gate_lr = 0.01
decay_lr = True
min_lr = 6e-5

eval_interval = 250
eval_iters = 16
log_interval = 10
ckpt_interval = 250
always_save_checkpoint = True

device = 'auto'
dtype = 'auto'
compile = True
seed = 1337
gate_init = (0.0,)         # infini heads start as an even mix of memory and local attention
