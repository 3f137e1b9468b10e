"""Two Toil jobs, each one TES task: the second reads what the first wrote to the job store.

Run by the Toil venv: ``python greet_shout.py JOBSTORE --output FILE [toil options]``.
"""

import os

from toil.common import Toil
from toil.job import Job


def greet(job):
    path = job.fileStore.getLocalTempFile()
    with open(path, "w") as f:
        f.write(f"hello from toil as {os.getuid()}\n")
    return job.fileStore.writeGlobalFile(path)


def shout(job, file_id, output):
    with open(job.fileStore.readGlobalFile(file_id)) as f:
        text = f.read()
    with open(output, "w") as f:
        f.write(text.upper())


if __name__ == "__main__":
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("--output", required=True)
    options = parser.parse_args()
    root = Job.wrapJobFn(greet)
    root.addFollowOnJobFn(shout, root.rv(), options.output)
    with Toil(options) as toil:
        toil.start(root)
