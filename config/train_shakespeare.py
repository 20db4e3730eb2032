# a modest word-level (GPT-2 BPE) model of Shakespeare's complete works
#   python gpt/data.py shakespeare       # prepares data/shakespeare (GPT-2 tokens)
#   python gpt/train.py config/train_shakespeare.py
# The 50257-token vocabulary dominates a model this small: the embedding/LM head is most of it.

out_dir = 'out-shakespeare'
eval_interval = 250
eval_iters = 50
log_interval = 10

always_save_checkpoint = False

dataset = 'shakespeare'
gradient_accumulation_steps = 2
batch_size = 8
block_size = 128

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.1

learning_rate = 6e-4
max_iters = 3000
lr_decay_iters = 3000
min_lr = 6e-5
beta2 = 0.99

warmup_iters = 100
