# Stage 4 of the recall recipe (docs/recall.md): the stage-3 model (configs/recall_infini_18k.py, 18,432-token
# examples) fine-tuned on 147,456-token examples = 4,608 segments of 32, one per step. Each stage trains on 8x the
# length of the one before: the key's share of the memory's read falls as 1/length, and training on longer filler is
# meant to teach the memory to give filler less weight (scripts/recall_diagnosis.py; what each stage reached:
# docs/recall.md). With n_embd 96 and the answer at every position of its segment this stage is what carries the
# key to 1M tokens (docs/recall_1m.md#the-memory-at-1m-tokens); with one alignment it made the end of the number fail.
#   python train.py configs/recall_infini_147k.py
#   python passkey.py --ckpt out-recall-infini-147k/ckpt.pt --len 1M --trials 10 --depth start,middle
out_dir = 'out-recall-infini-147k'
init_from = 'out-recall-infini-18k/ckpt.pt'     # weights only, a fresh optimizer
dataset = 'passkey'
passkey_loss = 'all'
eval_interval = 100
eval_iters = 2

batch_size = 1
seq_len = 147456
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
