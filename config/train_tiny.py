# a tiny model for tests and smoke runs: trains in seconds on a CPU

out_dir = 'out-tiny'
eval_interval = 10
eval_iters = 2
log_interval = 1

dataset = 'shakespeare_char'
batch_size = 4
block_size = 16

n_layer = 2
n_head = 2
n_embd = 32
dropout = 0.0

learning_rate = 1e-2
max_iters = 20
lr_decay_iters = 20
min_lr = 1e-3
beta2 = 0.99
warmup_iters = 2
