"""Training plumbing shared by pretrain, retrain, finetune (and the pseudolabel/select trainers)."""
