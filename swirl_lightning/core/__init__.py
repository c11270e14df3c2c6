"""The core every stage builds on: the trajectory format, tasks, tools, plugins, models, prompts and the shared
config vocabulary. It imports no stage package (judging, rollout, training) and no plugin."""
