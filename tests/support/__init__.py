"""Helpers shared by the tests and bench/, not tests themselves (`from tests.support import faults`
from the repository root):

    clirun       the real CLI in a child process or in this one, and what a user error must look like
    faults       fault scenarios (SIGKILL, a damaged or locked store, disk full, read-only, two processes)
    damage       the damage they inject (garbled or cut stores, a file size limit, dropped capabilities)
    bad_inputs   the bad-input catalogue: each case exits 2 with one line, before any model loads
    appserver    a real `streamlit run app.py` and Debian's Chromium
    cgroup       a memory-capped child (the Streamlit Cloud rehearsal)
    gaussians    Gaussian mixtures whose MAUVE frontier is known exactly
"""
