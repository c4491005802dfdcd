raise ImportError("this pack needs a module that is not installed")
