# Stage 1 of the recall recipe (docs/recall.md): a tiny Infini-attention model learns, from scratch on a CPU, to find
# a pass key planted 2-3 segments before the question; the later stages (recall_infini_long.py, _18k, _147k) fine-tune
# it on longer examples, and scripts/recall_cpu.py runs them all and tests them at up to 1M tokens.
# The examples are generated (passkey.PasskeyData: the task text, filler, "The pass key is N. Remember it. N is the
# pass key.", more filler, the question), 288 byte tokens = 9 segments of 32, a random key 1..50000 at a random depth.
#   python train.py configs/recall_infini.py
#   python passkey.py --ckpt out-recall-infini/ckpt.pt --len 288 --trials 100
# What makes it learn (docs/recall.md has the ablation): the loss on every token plus the answer's own mean (the filler
# and key line teach the copying that the answer then does through the memory), a large learning rate, gates that
# start one head per layer on memory (β = +3) and the others on local attention (β = -3), and the curriculum below.
out_dir = 'out-recall-infini'
dataset = 'passkey'
tokenizer = 'byte'
passkey_loss = 'all'
eval_interval = 250
eval_iters = 4             # batches of generated examples; the val loss is the answer's alone

batch_size = 16
seq_len = 288            # 9 segments of 32: the key line and the question, with up to ~40 tokens of filler
gradient_accumulation_steps = 1

n_layer = 2
n_head = 3               # heads of 32: n_embd 64 with 2 heads learned stage 1 in fewer seeds (docs/recall.md)
n_embd = 96
attn = 'infini'
segment_len = 32
mem_update = 'linear'
gate_init = (3.0, -3.0, -3.0)   # one head starts on memory, two on local attention

learning_rate = 1e-2
max_iters = 3500
# A curriculum: the first 2400 steps end every example with its answer (one position in its segment), the rest put it
# at every position. With the answer at every position from the start the answer loss fell at a step that moved with
# seed and thread count, and in some runs not in 4,000 steps; with the curriculum the answer at the end was learned by
# step 1700 at the latest in all 8 runs measured (seeds 1-4 x 1, 2 threads), and the answer at every position
# followed within 50 steps of the switch (docs/recall.md#a-curriculum-the-answer-at-one-position-first).
passkey_one_offset_iters = 2400
weight_decay = 0.1
grad_clip = 1.0
gate_lr = 1e-3            # the gates stay near their start: with 3e-2 the memory head of layer 2 drifted to local attention and recall failed
warmup_iters = 30
min_lr = 1e-3

device = 'auto'
compile = False
