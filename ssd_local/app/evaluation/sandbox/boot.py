"""Child side: the boot loader, the first code the child runs (``python -I -S -c BOOT``,
where ``BOOT`` in ``host.py`` only reads this module's code object from stdin and execs it
as ``__main__``).

It reads the next chunk of stdin: the marshalled ``((name, code), ...)`` of the child-side
modules the job needs, makes each a module of the package ``_ssd_sandbox`` that exists only
in ``sys.modules`` (so their relative imports work there as they do in the host's package),
then hands over to :func:`runner.main`, which reads the job itself.

Standard library only, never imports ``ssd_local``.
"""

import marshal
import os
import sys

PACKAGE = "_ssd_sandbox"  # the child's name for the sandbox package


def load():
    """The package, its modules made from stdin's code objects, in order."""
    pkg = sys.modules[PACKAGE] = type(sys)(PACKAGE)
    pkg.__path__ = []
    for name, code in marshal.loads(os.read(0, int(os.read(0, 10)))):
        mod = sys.modules[PACKAGE + "." + name] = type(sys)(PACKAGE + "." + name)
        mod.__package__ = PACKAGE
        mod.__file__ = code.co_filename
        setattr(pkg, name, mod)
        exec(code, mod.__dict__)
    return pkg


if __name__ == "__main__":  # the child's -c module; importing this file does nothing
    load().runner.main()
