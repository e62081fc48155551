# LongNet dilated attention on PG19 (Ding et al. 2023, "LongNet: Scaling Transformers to 1,000,000,000 Tokens",
# arXiv:2307.02486, section 2.2, and the language-model schedule of its section 4: segment lengths
# w = 2048, 4096, 8192, 16384, 32768 with dilation rates r = 1, 2, 4, 6, 12). Rates 6 and 12 do not divide w;
# model.py pads each segment to a multiple of r and masks the padding, so the schedule runs as published.
# With 8 heads and r = 12, the paper's offsets (head j keeps j mod r) would leave residues 8..11 unqueried;
# model.head_offsets gives heads 0..3 a second offset (8..11), so every position is a query in every pattern.
# The model and training are pg19_infini.py's (12 layers, 8 x 128 heads, windows of 32768 tokens, AdamW: see
# its comments) with dilated attention in place of Infini-attention, for a comparison at equal size.
# Cost (estimated, not measured): the patterns do ~2x the local layer's attention FLOPs, ~1.1 s/step on 8 H100s.
# Memory: model.py computes each pattern's scores densely in fp32; at 32768 tokens that is several GB of
# activations per layer (estimate), so this may need fewer tokens per window (--seq_len=16384) to fit 80 GB.
#   torchrun --standalone --nproc_per_node=8 train.py configs/pg19_dilated.py
out_dir = 'out-pg19-dilated'
dataset = 'tokens'         # the files in data_dir (train.py's default is generated passkeys)
data_dir = 'data/pg19'
eval_interval = 250
eval_iters = 16
ckpt_interval = 250
always_save_checkpoint = True

# 64 windows of 32768 tokens per step (~2.1M tokens): 1 window per micro-step, 64 micro-steps over all GPUs
batch_size = 1
seq_len = 32768
gradient_accumulation_steps = 64

n_layer = 12
n_head = 8
n_embd = 1024
dropout = 0.0
attn = 'dilated'
dilated_segments = (2048, 4096, 8192, 16384, 32768)
dilated_rates = (1, 2, 4, 6, 12)

learning_rate = 6e-4
max_iters = 10000          # ~21B tokens, several epochs of PG19; our choice of budget, not the paper's
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
decay_lr = True
warmup_iters = 1000        # as the paper
lr_decay_iters = 10000
min_lr = 6e-5

dtype = 'auto'             # bf16 autocast on the GPU
compile = True
