"""Evaluation: how good a model is, measured the way lm-evaluation-harness and the metric libraries measure it.

    loss.py, bpb.py          held-out loss and bits per byte (training calls these)
    loglik.py                log-likelihood of continuations and rolling log-likelihood of texts (lm-eval's way)
    perplexity.py            token, word and byte perplexity, bits per byte
    multiple_choice.py       acc and acc_norm with standard errors
    answers.py, exact_match.py  exact match, F1, math answers; exact match by generation for fine-tuning
    code.py                  a sandbox for generated programs, pass@k
    metrics.py, porter.py    BLEU, chrF, ROUGE (with the Porter stemmer)
    judge.py                 a model as judge: rubric grades, pairwise A/B in both orders, agreement
    stats.py, lite.py        standard errors, bootstrap intervals, rank correlations; lite-eval subsets
    ratings.py, arena/       human votes in a web page, Elo and Bradley-Terry leaderboards
    tasks.py, builtin.py, suites/  task files and the built-in offline tasks
    runner.py, report.py     scoring a task on a model; the report with plots
    lm_eval_bridge.py        llmlab models inside lm-eval

It sits below training so that training can call it; nothing here trains.
"""
