"""What every request reads: the model spec, datatypes, tensor helpers and file signatures."""
