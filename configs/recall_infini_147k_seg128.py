# Stages 6 and 7 of the 128-token-segment run, infini_seg128 in scripts/recall_cpu.py (docs/recall_1m.md): the
# stage-5 model (configs/recall_infini_seg128.py, its segments widened from 32 to 128 on 2,304-token examples)
# fine-tuned on 147,456-token examples = 1,152 segments of 128, as stage 4 was with 32. After stage 5 alone (a trial
# with --seed=1) it found 35-55% of 20 keys per depth at 147,456 tokens: the short stage had undone part of what stage
# 4 taught the memory about filler. Then:
#   python passkey.py --ckpt out-recall-infini-147k-seg128/ckpt.pt --len 1M --trials 10 --depth start,middle
# Stage 7 is this config once more, from stage 6's checkpoint with new examples (another --seed): it took seeds 1
# and 2 from 90 / 94 and 92 / 82% to 96 / 98 and 90 / 90% at 1M
# (docs/recall_1m.md#longer-segments-the-papers-attention-at-1m).
out_dir = 'out-recall-infini-147k-seg128'
init_from = 'out-recall-infini-seg128/ckpt.pt'  # weights only, a fresh optimizer
dataset = 'passkey'
passkey_loss = 'all'
eval_interval = 100
eval_iters = 2

batch_size = 1
seq_len = 147456
gradient_accumulation_steps = 1
segment_len = 128

learning_rate = 1e-3
max_iters = 100
weight_decay = 0.1
grad_clip = 1.0
gate_lr = 1e-3
warmup_iters = 30
min_lr = 1e-4

device = 'auto'
compile = False
