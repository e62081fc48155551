# Tiny grouped cross-attention (DRT, Hu et al. 2024, arXiv:2410.01651) model on the synthetic corpus, at the size and
# budget of tiny_local.py / tiny_infini.py (4 layers, n_embd 128, 300 steps of 8 x 512 tokens) for comparison.
# Every layer: a sliding window of 128 tokens (= the others' segment_len). The upper 2 layers add cross-attention to
# 4 retrieved chunks of 32 tokens (the facts of a document lie beyond the window; only retrieval can bring them back).
# Scaled down from the paper's window 512, chunk 64, top-8, half the layers lower.
# Time: 3.7 minutes measured on a busy 2-core machine (OMP_NUM_THREADS=1; two threads were slower there).
out_dir = 'out-tiny-gca'
dataset = 'tokens'         # the files in data_dir (train.py's default is generated passkeys)
data_dir = 'data/synthetic'
eval_interval = 50
eval_iters = 8
always_save_checkpoint = True

batch_size = 8
seq_len = 512              # 16 chunks of 32
gradient_accumulation_steps = 1

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
attn = 'gca'
gca_window = 128
gca_chunk = 32
gca_topk = 4
gca_lower_layers = 2
gca_gumbel = 1.0           # Gumbel noise on the retrieval scores while training (picks only; weights stay clean)

learning_rate = 2e-3       # tiny models take large steps
max_iters = 300
weight_decay = 0.1
grad_clip = 1.0
warmup_iters = 30
lr_decay_iters = 0         # 0: decay over max_iters
min_lr = 2e-4

device = 'auto'
compile = False            # compiling takes longer than this whole run on a CPU
