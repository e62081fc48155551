# Stage 3 of the recall recipe (docs/recall.md): the stage-2 model (configs/recall_infini_long.py, 2,304-token
# examples) fine-tuned on 18,432-token examples = 576 segments of 32, one per step. Each stage trains on 8x the
# length of the one before: the key's share of the memory's read falls as 1/length, and training on longer filler is
# meant to teach the memory to give filler less weight (scripts/recall_diagnosis.py; what each stage reached, and
# where stage 4 fell short: docs/recall.md).
#   python train.py configs/recall_infini_18k.py
#   python passkey.py --ckpt out-recall-infini-18k/ckpt.pt --len 147456 --trials 20
out_dir = 'out-recall-infini-18k'
init_from = 'out-recall-infini-long/ckpt.pt'   # weights only, a fresh optimizer
dataset = 'passkey'
passkey_loss = 'all'
eval_interval = 100
eval_iters = 2

batch_size = 1
seq_len = 18432
gradient_accumulation_steps = 1

learning_rate = 3e-3
max_iters = 300
weight_decay = 0.1
grad_clip = 1.0
gate_lr = 1e-3
warmup_iters = 30
min_lr = 3e-4

device = 'auto'
compile = False
