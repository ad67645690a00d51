"""Training: state, sharded GCL step, checkpoints and the train-and-evaluate loop."""
