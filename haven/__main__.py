import sys

from haven.cli.main import main

sys.exit(main())
