"""The labs: a guided path of exercises, each a file to fill in and a notebook, with checks that name the mistake.

    llmlab labs list                          # the path
    llmlab labs start attention --dir work    # work/attention.py (to fill in) and work/attention.ipynb
    llmlab labs check attention --dir work    # ✓/✗ per check; exit status 0 only when all pass

In a notebook, `llmlab.labs.check("attention")` checks ./attention.py. The path is `registry.LABS`; what
a lab is made of is described in `registry.py`, how checks run in `checking.py`.
"""

from llmlab.labs.registry import LABS, Bug, Lab, get_lab
from llmlab.labs.workspace import check, notebook_json, start

__all__ = ["LABS", "Bug", "Lab", "check", "get_lab", "notebook_json", "start"]
