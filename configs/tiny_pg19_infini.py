# Tiny Infini-attention model on real books, sized for a CPU: PG19 (or a folder of pg19-like books) in byte tokens.
# 4 layers, n_embd 128, 1024-token windows = 8 segments of 128, so the memory carries 7 segments of context.
# Compare with tiny_pg19_local.py (the same model without the memory) at equal steps; docs/cpu.md has the numbers.
# Infini-attention: Munkhdalai et al. 2024, arXiv:2404.07143. Byte tokens keep the vocabulary (and the LM head)
# at 256: with GPT-2's 50,257 tokens the same model would be ~90% embedding and LM head.
# Data: python data/pg19/prepare.py --input path/to/pg19-mini --out data/pg19_byte --tokenizer byte
# Time: 600 steps, about 6 minutes on 2 idle cores, 11-13 when other jobs load them (docs/cpu.md).
out_dir = 'out-tiny-pg19-infini'
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
attn = 'infini'
segment_len = 128
mem_update = 'linear'
gate_init = (-3.0,)        # every head starts 95% on local attention: with an even start (0.0) the untrained memory
                           # read took half of each head's output and this model ended worse than local (docs/cpu.md)

learning_rate = 2e-3       # tiny models take large steps
max_iters = 600
weight_decay = 0.1
grad_clip = 1.0
gate_lr = 0.01
warmup_iters = 30
lr_decay_iters = 0         # 0: decay over max_iters
min_lr = 2e-4

device = 'auto'
compile = False            # compiling takes longer than this whole run on a CPU
