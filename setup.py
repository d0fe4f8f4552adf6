"""Only what pyproject.toml cannot say: the CUDA sources travel inside the wheel.

The kernels compile on first GPU use (``sglang_tokenweave.comm.build``), so an installed package
needs ``csrc/``; it is copied to ``sglang_tokenweave/_csrc`` (an editable install reads ``csrc/``).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithKernelSources(build_py):
    def run(self):
        super().run()
        shutil.copytree(Path(__file__).parent / "csrc", Path(self.build_lib) / "sglang_tokenweave" / "_csrc",
                        dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithKernelSources})
