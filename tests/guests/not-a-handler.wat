;; A component that exports nothing: not of the world wasmbatch:handler.
(component)
