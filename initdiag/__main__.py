from initdiag.cli import main

main()
