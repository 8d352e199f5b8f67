from harness.launch import main

raise SystemExit(main())
