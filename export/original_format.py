"""placeholder"""
def write_original(*a): raise NotImplementedError
def config_from_original(*a): raise NotImplementedError
def state_dict_to_hf(*a): raise NotImplementedError
