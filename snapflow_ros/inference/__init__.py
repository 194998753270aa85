"""The policy in a process of its own: ``ProcessRunner`` (node side, no torch) and ``worker``
(the child process, which loads the policy with torch). See process_runner.py."""
