"""libc calls that Python's os module lacks, shared by posix_diff.py and cli_diff.py."""

import ctypes
import os

AT_FDCWD = -100
SYS_RENAMEAT2_X86_64 = 316

LIBC = ctypes.CDLL(None, use_errno=True)


def libc_function(name, argtypes):
    """The libc function `name` with its argument types, or None where libc lacks it."""
    function = getattr(LIBC, name, None)
    if function is not None:
        function.argtypes = argtypes
        function.restype = ctypes.c_int
    return function


LIBC_RENAMEAT2 = libc_function(
    "renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint])
LIBC_FALLOCATE = libc_function(
    "fallocate", [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64])


def check_libc(ret):
    """Raises the errno of a libc call that returned -1, as os does."""
    if ret == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def renameat2(source, target, flags):
    source, target = os.fsencode(source), os.fsencode(target)
    if LIBC_RENAMEAT2 is not None:
        check_libc(LIBC_RENAMEAT2(AT_FDCWD, source, AT_FDCWD, target, flags))
    else:  # glibc before 2.28: the raw system call
        check_libc(LIBC.syscall(
            ctypes.c_long(SYS_RENAMEAT2_X86_64), ctypes.c_long(AT_FDCWD),
            source, ctypes.c_long(AT_FDCWD), target, ctypes.c_long(flags)))


def fallocate(fd, mode, offset, length):
    check_libc(LIBC_FALLOCATE(fd, mode, offset, length))
