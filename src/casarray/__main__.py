from casarray.cli import main

main()
