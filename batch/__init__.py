"""Running a batch: the jobs (files and shards), one file through the stages (pipeline), resuming, the workers
and the two pools that run them (local processes, Ray actors), and the run that drives them all (run)."""
