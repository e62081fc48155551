# Grouped cross-attention (DRT) on PG19: Hu et al. 2024, "Efficient Long-range Language Modeling with Self-supervised
# Causal Retrieval" (arXiv:2410.01651), with the attention settings of the paper: every layer a sliding window of
# 512 tokens, chunks of 64, top-8 retrieval, the lower half of the layers (6 of 12) without cross-attention.
# The rest is pg19_infini.py's model and budget (12 layers, 8 x 128 heads, windows of 32768 tokens, AdamW at 6e-4,
# batch 64), so the two compare at equal size; the paper's own training windows were shorter (16K in its later
# version) and its GCA has a chunk encoder and landmark tokens that ours replaces (see model.py).
# Data: `python data/pg19/prepare.py` writes data/pg19 (GPT-2 tokenizer).
#
# Cost (estimated from model.flops_per_token, not measured): 1.43 GFLOP per token against pg19_infini.py's 1.39
# (a window of 512 keys instead of ~1024 in 2048-token segments, plus 8 x 64 = 512 retrieved keys in each of the
# 6 upper layers); 219M parameters against 203M (the retriever and the cross-attention): ~1 s/step on 8 H100s.
# Memory at batch_size 1 and 32768 tokens in bf16, on top of pg19_infini.py's: the gathered neighbours, 512 chunks
# x 8 x 64 tokens x 1024 x 2 bytes = 0.5 GB for K and for V (shared by the upper layers), and per upper layer a
# query copy and an output of that size (~1 GB): an 80 GB GPU. No store is kept in training (one window per call).
#   torchrun --standalone --nproc_per_node=8 train.py configs/pg19_gca.py
out_dir = 'out-pg19-gca'
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
attn = 'gca'
gca_window = 512
gca_chunk = 64
gca_topk = 8
gca_lower_layers = 6
gca_gumbel = 1.0           # Gumbel noise on the retrieval scores while training (the pick only; weights stay clean)

learning_rate = 6e-4
max_iters = 10000          # as pg19_infini.py: our choice of budget, not the paper's
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
decay_lr = True
warmup_iters = 1000
lr_decay_iters = 10000
min_lr = 6e-5

dtype = 'auto'             # bf16 autocast on the GPU
compile = True
