# The embedded default of train.py: `python train.py` with no config file uses exactly these values.
# A tiny Infini-attention model (2 layers, n_embd 64, 0.1M parameters, byte tokens) learns passkey retrieval from
# generated examples (passkey.PasskeyData): the task text, "The pass key is N. Remember it. N is the pass key.", a
# little filler, the question; 288 tokens = 9 segments of 32, so the key sits 2-3 segments before the question, out of
# local attention's reach. Each layer has 4 heads of 16: one started on memory (gate β = 3), three on local attention
# (β = -3), which build the context the memory's keys need (which digit of the number this is); with 2 heads of 32
# (stage 1 of the recall recipe, configs/recall_infini.py) the quick start learned in 5 of 16 seed x thread runs.
# 2200 steps, the answer at every position of its segment: over seeds 1-8 x 1, 2 threads each run found 91-100% of the
# keys whose answer lies inside one segment and 0-29% of those whose 6 tokens run into the next segment (6 positions
# in 32), 70-86% in all (docs/recall.md#the-quick-start); about 3 minutes on 2 idle CPU cores (docs/cpu.md).
# Then: python passkey.py --ckpt out-quickstart/ckpt.pt --len 288 --trials 100
# Why these settings (gates started apart, gate_lr 1e-3, lr 1e-2, the answer's loss on top): docs/recall.md.
out_dir = 'out-quickstart'
dataset = 'passkey'
tokenizer = 'byte'
passkey_loss = 'all'
eval_interval = 250
eval_iters = 4

batch_size = 16
seq_len = 288
gradient_accumulation_steps = 1

n_layer = 2
n_head = 4
n_embd = 64
dropout = 0.0
attn = 'infini'
segment_len = 32
mem_update = 'linear'
gate_init = (3.0, -3.0, -3.0, -3.0)

learning_rate = 1e-2
max_iters = 2200
weight_decay = 0.1
grad_clip = 1.0
gate_lr = 1e-3
warmup_iters = 30
lr_decay_iters = 0
min_lr = 1e-3

device = 'auto'
compile = False
