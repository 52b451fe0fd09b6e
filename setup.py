"""Package discovery (everything else is in pyproject.toml): every package under diffinpaint/ is found by itself, so
a new model's folder ships in the wheel without editing a list; prompts/ lives at the top level (data, not code)
and ships inside the package as diffinpaint.prompts."""
from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["diffinpaint", "diffinpaint.*"]), "diffinpaint.prompts"],
      package_dir={"diffinpaint.prompts": "prompts"})
