"""Pseudo-label network: training on the labelled source domain, batched inference and scoring."""
