"""The attention study: a character-level GPT trained by fnnet's rules, and three results on attention.

* ``char_gpt`` — a small GPT on offline text (Python's own documentation), manual vs autodiff steps as
  llm.c checks them, bits per character against unigram and bigram baselines, and a sample.
* ``attention_scale`` — why scores are divided by √d_k (Vaswani et al. 2017, §3.2.1).
* ``norm_position`` — Pre-LN vs Post-LN at initialization and without warm-up (Xiong et al. 2020).
* ``rank_collapse`` — pure attention loses rank doubly exponentially; skips prevent it (Dong et al. 2021).
"""
