# The one-GPU scale of scripts/reproduce.py (`--scale small`): the training settings every run shares. The driver
# adds, per run, attn, mem_update, seq_len, segment_len, the dilated pattern, the batch split, max_iters,
# warmup_iters, lr_decay_iters, data_dir and out_dir (`python scripts/reproduce.py --scale small --list` prints each
# full command).
#
# Model: 6 layers x 512 (8 heads x 64), GPT-2 vocabulary: 44.6M parameters, 25.8M of them the tied embedding.
# Why this size: pg19-mini has 23.4M training tokens and math-mini 14.2M, so ~100M tokens per run is already
# ~4.5 epochs (Muennighoff et al. 2023, arXiv:2305.16264: up to ~4 epochs of repeated data are worth almost as
# much as fresh data, beyond that less and less). A model much larger than this would be starved of data; the
# checkpoint (0.5 GB with AdamW's moments) still saves in a second, so a run can stop and resume within a few
# minutes of GPU time. The cost is FLOP-cheap: ~0.29 GFLOP per token, ~1.2 H100-minutes per 100M tokens at
# 400 TFLOP/s (an estimate, not measured).
dataset = 'tokens'         # the files in data_dir (train.py's default is generated passkeys)
n_layer = 6
n_head = 8
n_embd = 512
dropout = 0.0
bias = False

# AdamW, as the train part's PG19 configs (see configs/pg19_infini.py for why not the paper's Adafactor); a model
# this small takes the larger step usual for its size (GPT-3 used 6e-4 at 125M parameters).
learning_rate = 1e-3
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
gate_lr = 0.01             # Infini gates β: their own rate and no decay (model.configure_optimizers)
decay_lr = True
min_lr = 1e-4

eval_interval = 50
eval_iters = 4             # x batch_size windows of seq_len tokens
log_interval = 5
ckpt_interval = 25         # a killed run loses at most ~25 steps
always_save_checkpoint = True

device = 'auto'
dtype = 'auto'             # bf16 autocast on the GPU
compile = False            # every resume would compile again; eager spends short runs on training
seed = 1337
gate_init = (0.0,)         # infini heads start as an even mix of memory and local attention
