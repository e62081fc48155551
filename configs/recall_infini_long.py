# Stage 2 of the recall recipe (docs/recall.md): the stage-1 model (configs/recall_infini.py, 288-token examples with
# almost no filler) fine-tuned on 2304-token examples = 72 segments of 32, so that the key sits up to ~65 segments
# before the question and the model must find it among the filler: at 2304 tokens the key line's share of the stage-1
# memory head's read-out is a small fraction of its share at 288 (scripts/recall_diagnosis.py), and the stage-1
# model recalls no key there (docs/recall.md has the numbers).
#   python train.py configs/recall_infini.py && python train.py configs/recall_infini_long.py
#   python passkey.py --ckpt out-recall-infini-long/ckpt.pt --len 2304 --trials 100
out_dir = 'out-recall-infini-long'
init_from = 'out-recall-infini/ckpt.pt'   # weights only, a fresh optimizer
dataset = 'passkey'
passkey_loss = 'all'
eval_interval = 100
eval_iters = 4

batch_size = 4
seq_len = 2304
gradient_accumulation_steps = 1

learning_rate = 3e-3
max_iters = 500
weight_decay = 0.1
grad_clip = 1.0
gate_lr = 1e-3
warmup_iters = 30
min_lr = 3e-4

device = 'auto'
compile = False
