"""Running a build: prepare / execute / finalize (`build.py`), the build's identity and resume
state, progress, Beam's Dataflow dry run, provenance, and `corebuild models check`."""
