"""initdiag: is a network's weight initialization healthy, before any GPU hour is spent?"""

__version__ = "0.1.0"
