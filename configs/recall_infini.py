# Stage 1 of the recall recipe (docs/recall.md): a tiny Infini-attention model learns, from scratch on a CPU, to find
# a pass key planted 2-3 segments before the question; the later stages (recall_infini_long.py, _18k, _147k) fine-tune
# it on longer examples, and scripts/recall_cpu.py runs them all and tests them at up to 1M tokens.
# The examples are generated (passkey.PasskeyData: the task text, filler, "The pass key is N. Remember it. N is the
# pass key.", more filler, the question), 288 byte tokens = 9 segments of 32, a random key 1..50000 at a random depth.
#   python train.py configs/recall_infini.py
#   python passkey.py --ckpt out-recall-infini/ckpt.pt --len 288 --trials 100
# What makes it learn (docs/recall.md has the ablation): the loss on every token plus the answer's own mean (the filler
# and key line teach the copying that the answer then does through the memory), a large learning rate, and gates that
# start half the heads on memory (β = +3) and half on local attention (β = -3).
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
n_head = 2
n_embd = 64
attn = 'infini'
segment_len = 32
mem_update = 'linear'
gate_init = (3.0, -3.0)

learning_rate = 1e-2
max_iters = 2500          # the answer loss falls late (steps 1000-2000) and at a seed-dependent step: 1500 was not always enough
weight_decay = 0.1
grad_clip = 1.0
gate_lr = 1e-3            # the gates stay near their start: with 3e-2 the memory head of layer 2 drifted to local attention and recall failed
warmup_iters = 30
min_lr = 1e-3

device = 'auto'
compile = False
