"""Running one task's executors in order inside its task directory, through a runtime.

Used in-process by the local backend; written so that a batch script on a compute node
can run the same code.
"""
