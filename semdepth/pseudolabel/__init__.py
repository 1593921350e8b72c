"""Pseudo-label network: training on the labelled source domain (`train`), batched inference and
scoring (`infer`), and the whole run over a prepared manifest (`run`, what the pseudolabel stage calls)."""
