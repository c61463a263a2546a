from kpipe.cli import main

raise SystemExit(main())
