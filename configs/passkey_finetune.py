# Passkey fine-tuning, as the Infini-attention paper does it (Munkhdalai et al. 2024, arXiv:2404.07143, section 4.2):
# the 1B model, pre-trained on 4K-token inputs, is fine-tuned for 400 steps at lr 1e-4 on 5K-token passkey
# examples, then finds the key at every depth up to 1M tokens. The examples are generated, not read from disk
# (passkey.sample_finetune_batch: filler text with "The pass key is N ..." at a random depth, a random key
# 1..50000, the loss on the answer's tokens only), so data_dir is unused and dataset = 'passkey'.
# train.py then draws train and validation batches from passkey.PasskeyData in the init_from checkpoint's tokenizer.
#   python train.py configs/passkey_finetune.py                               # from the quick start's checkpoint
#   python train.py configs/passkey_finetune.py --init_from=out-pg19-infini/ckpt.pt --seq_len=6144 --out_dir=...
#   python passkey.py --ckpt out-passkey-ft/ckpt.pt --lens 32K,128K,1M --trials 20
# seq_len must be a multiple of the checkpoint's segment_len: 5120 = 160 x 32 (the quick start's) or 5 x 1024; a
# model with 2048-token segments takes 6144 (3 segments), the nearest to the paper's 5K.
out_dir = 'out-passkey-ft'
init_from = 'out-quickstart/ckpt.pt'   # a pretrained checkpoint (weights only; a fresh optimizer)
dataset = 'passkey'
passkey_loss = 'answer'    # the paper's: the loss on the answer's tokens only
eval_interval = 100
eval_iters = 4             # batches of generated examples, the same ones at every eval (a fixed seed)
always_save_checkpoint = True

batch_size = 8
seq_len = 5120             # the paper's 5K-token inputs
gradient_accumulation_steps = 1

learning_rate = 1e-4       # the paper's
max_iters = 400            # the paper's
warmup_iters = 20
decay_lr = True
min_lr = 1e-5
weight_decay = 0.1
grad_clip = 1.0
gate_lr = 0.01             # the gates β decide how much each head reads from memory: they must be free to move

device = 'auto'
compile = False
