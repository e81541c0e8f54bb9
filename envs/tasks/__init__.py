from envs.tasks.arithmetic import arithmetic_prompts, arithmetic_split

__all__ = ["arithmetic_prompts", "arithmetic_split"]
