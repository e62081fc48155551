# Stage 5 of the 1M recipe with the sliding window (docs/recall_1m.md#stage-5-in-the-recipe): 100 more steps on
# 147,456-token examples from the stage-4 checkpoint (configs/recall_infini_147k.py), at a third of its learning
# rate. After stage 4 one seed found the key up to 147K, yet by 1M lost the end of the number (66 / 64% of keys);
# these steps brought it back (96 / 98%). The model's settings come from the checkpoint; give a seed other than
# stage 4's, or the examples are stage 4's first 100 again (scripts/recall_cpu.py gives the run's seed + 100).
#   python train.py configs/recall_infini_147k_more.py --seed=101
#   python passkey.py --ckpt out-recall-infini-147k-more/ckpt.pt --len 1M --trials 10 --depth start,middle
out_dir = 'out-recall-infini-147k-more'
init_from = 'out-recall-infini-147k/ckpt.pt'    # weights only, a fresh optimizer
dataset = 'passkey'
passkey_loss = 'all'
eval_interval = 100
eval_iters = 2

batch_size = 1
seq_len = 147456
gradient_accumulation_steps = 1

learning_rate = 1e-3
max_iters = 100
weight_decay = 0.1
grad_clip = 1.0
gate_lr = 1e-3
warmup_iters = 30
min_lr = 1e-4

device = 'auto'
compile = False
