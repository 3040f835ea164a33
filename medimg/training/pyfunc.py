"""The old home of the MLflow pyfunc, kept so pyfunc models logged before it moved still load.

A medimg pyfunc is logged from code: its three-line script imports ``MedimgPyfunc`` by module
path, and models logged before the pyfunc moved down to :mod:`medimg.inference.pyfunc` name
this module. In a fresh process they load with the medimg copy logged beside them; in a process
that has already imported medimg, their import lands here. Nothing else lives here: import
from :mod:`medimg.inference.pyfunc` (``log_pyfunc_model``) and :mod:`medimg.inference.model_io`
(``download_model_folder``).
"""

from __future__ import annotations

from medimg.inference.pyfunc import MedimgPyfunc

__all__ = ["MedimgPyfunc"]
