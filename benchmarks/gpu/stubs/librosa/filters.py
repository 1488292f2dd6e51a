from . import filters as _f

mel = _f.mel
