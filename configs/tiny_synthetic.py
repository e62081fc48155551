# The quick start of earlier versions: a tiny Infini-attention model (4 layers, n_embd 128, ~0.8M parameters) on the
# synthetic key-value recall corpus (data/synthetic, byte tokenizer, generated on first use with one 512-token
# document per training window).
# Reproduces nothing from a paper: it shows the whole pipeline (data, training, eval, checkpoint, log) working.
# Time: 1.5 minutes on 2 idle CPU cores (300 steps of 8 x 512 tokens); 3 to 8 minutes when other jobs share them.
# The val loss falls from ln(256) = 5.5 to about 0.5. In this budget no kind learns to recall the facts' values (their
# digits stay at chance, ln 10 nats each): the kinds differ on the filler and the query keys only (the README's
# results, scripts/gca_compare.py).
out_dir = 'out-tiny-synthetic'
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
